package main

// The one-node mode (--node): a kubelet and kube-scheduler (sub-commands of this binary), Debian's
// containerd with its own configuration, socket and state folders, a CNI bridge for the pods, and
// a DNAT rule that takes pods to the API server through the `kubernetes` Service address. Every
// host resource it creates is named after the run (jko-<id>) and removed by teardown.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// serviceIP is the first address of --service-cluster-ip-range: the `kubernetes` Service.
const serviceIP = "10.0.0.1"

type node struct {
	id         string // jko-<hex>: the bridge, cgroup and /run folder names
	dir        string // under the control plane's --dir: configs, logs, containerd root
	run        string // /run/jko-<hex>: sockets, containerd state, kubelet root (short paths)
	name       string // the node's name: the hostname
	subnet     string // 10.244.N.0/24
	gateway    string // 10.244.N.1: the bridge's address, where pods reach the host
	apiPort    int
	images     []string
	pauseImage string

	containerd, kubelet, scheduler *child
	dnat                           []string // the iptables rule, as arguments after -A/-D
	client                         *http.Client
	server                         string
}

type nodeInfo struct {
	Name            string `json:"name"`
	Bridge          string `json:"bridge"`
	Gateway         string `json:"gateway"`
	Subnet          string `json:"subnet"`
	ContainerdSock  string `json:"containerdSocket"`
	KubeletRootDir  string `json:"kubeletRootDir"`
	CgroupRoot      string `json:"cgroupRoot"`
	ContainerdPID   int    `json:"containerdPid"`
	KubeletPID      int    `json:"kubeletPid"`
	SchedulerPID    int    `json:"schedulerPid"`
	ReadyAfterStart string `json:"readyAfterStart"`
}

func newNode(dir string, apiPort int, images []string, pauseImage string) (*node, error) {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, err
	}
	n := &node{
		id: "jko-" + hex.EncodeToString(b), dir: dir, name: strings.ToLower(host),
		apiPort: apiPort, images: images, pauseImage: pauseImage,
	}
	n.run = "/run/" + n.id
	// A /24 of 10.244.0.0/16 that no interface of this host uses yet.
	addrs, _ := exec.Command("ip", "-4", "-o", "addr").Output()
	for i := 0; i < 64; i++ {
		third := 1 + int(b[2]+byte(i*37))%250
		n.subnet = fmt.Sprintf("10.244.%d.0/24", third)
		n.gateway = fmt.Sprintf("10.244.%d.1", third)
		if !bytes.Contains(addrs, []byte(" 10.244."+strconv.Itoa(third)+".")) {
			break
		}
	}
	return n, nil
}

func (n *node) sock() string { return filepath.Join(n.run, "containerd.sock") }

func (n *node) kubeletRoot() string { return filepath.Join(n.run, "kubelet") }

func run1(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// network creates the bridge with its gateway address, lets pods' packets to 10.0.0.1:443 reach
// the API server on 127.0.0.1, and writes the CNI configuration (before containerd starts: it
// reads the folder once).
func (n *node) network() error {
	if err := run1("ip", "link", "add", n.id, "type", "bridge"); err != nil {
		return err
	}
	if err := run1("ip", "addr", "add", n.gateway+"/24", "dev", n.id); err != nil {
		return err
	}
	if err := run1("ip", "link", "set", n.id, "up"); err != nil {
		return err
	}
	// Packets DNATed to 127.0.0.1 are dropped as martians unless this is set on the interface
	// they arrive on.
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+n.id+"/route_localnet", []byte("1"), 0o644); err != nil {
		return err
	}
	n.dnat = []string{"PREROUTING", "-t", "nat", "-i", n.id, "-d", serviceIP, "-p", "tcp", "--dport", "443",
		"-j", "DNAT", "--to-destination", fmt.Sprintf("127.0.0.1:%d", n.apiPort),
		"-m", "comment", "--comment", n.id}
	if err := run1("iptables", append([]string{"-w", "-A"}, n.dnat...)...); err != nil {
		n.dnat = nil
		return err
	}
	conf := map[string]any{
		"cniVersion": "0.4.0",
		"name":       n.id,
		"plugins": []any{map[string]any{
			"type":        "bridge",
			"bridge":      n.id,
			"isGateway":   true,
			"ipMasq":      false,
			"hairpinMode": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": n.subnet, "gateway": n.gateway}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": filepath.Join(n.dir, "cni-ipam"),
			},
		}},
	}
	if err := os.MkdirAll(filepath.Join(n.dir, "cni"), 0o755); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(conf, "", "  ")
	return os.WriteFile(filepath.Join(n.dir, "cni", "10-"+n.id+".conflist"), data, 0o644)
}

func (n *node) startContainerd() error {
	if err := os.MkdirAll(n.run, 0o711); err != nil {
		return err
	}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
`, filepath.Join(n.dir, "containerd"), filepath.Join(n.run, "containerd"), n.sock(), n.sock()+".ttrpc",
		filepath.Join(n.dir, "containerd-opt"), n.pauseImage, filepath.Join(n.dir, "cni"))
	cfg := filepath.Join(n.dir, "containerd.toml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		return err
	}
	n.containerd = &child{name: "containerd", log: filepath.Join(n.dir, "containerd.log"),
		cmd: []string{"containerd", "--config", cfg}}
	if err := n.containerd.start(); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if exec.Command("ctr", "--address", n.sock(), "version").Run() == nil {
			break
		}
		select {
		case <-n.containerd.exited():
			return fmt.Errorf("containerd exited during start-up; see %s", n.containerd.log)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not serving after 30s; see %s", n.containerd.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, img := range n.images {
		if err := run1("ctr", "--address", n.sock(), "-n", "k8s.io", "images", "import", img); err != nil {
			return fmt.Errorf("import image %s: %w", img, err)
		}
	}
	return nil
}

func (n *node) startKubelet(self, kubeconfig string) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	// Under /run/jko-<id>, not the control plane's folder: the kubelet makes unix sockets in its
	// root dir (pod-resources/<random>), and a deep path is over the 108-byte limit of their names.
	root := n.kubeletRoot()
	for _, d := range []string{root, filepath.Join(n.dir, "pod-logs")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	config := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://%s
cgroupDriver: cgroupfs
cgroupRoot: /%s
failCgroupV1: false
failSwapOn: false
podLogsDir: %s
resolvConf: ""
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
registerNode: true
serializeImagePulls: false
shutdownGracePeriod: 0s
syncFrequency: 10s
fileCheckFrequency: 60s
nodeStatusUpdateFrequency: 5s
`, ports[0], n.sock(), n.id, filepath.Join(n.dir, "pod-logs"))
	cfg := filepath.Join(n.dir, "kubelet.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		return err
	}
	if err := n.makeCgroupRoot(); err != nil {
		return err
	}
	n.kubelet = &child{name: "kubelet", log: filepath.Join(n.dir, "kubelet.log"),
		cmd: []string{self, "kubelet", "--config=" + cfg, "--kubeconfig=" + kubeconfig,
			"--root-dir=" + root, "--cert-dir=" + filepath.Join(n.dir, "kubelet-pki"), "--v=1"}}
	return n.kubelet.start()
}

func (n *node) startScheduler(self, kubeconfig string) error {
	n.scheduler = &child{name: "kube-scheduler", log: filepath.Join(n.dir, "kube-scheduler.log"),
		cmd: []string{self, "kube-scheduler", "--kubeconfig=" + kubeconfig, "--leader-elect=false",
			"--secure-port=0", "--v=1"}}
	return n.scheduler.start()
}

func (n *node) api(method, path string, body any) ([]byte, int, error) {
	var r io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, n.server+path, r)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return data, resp.StatusCode, err
}

// waitReady waits until the node is Ready and has no taint left (node-lifecycle-controller lifts
// the not-ready taint), so that pods schedule at once.
func (n *node) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := "not registered"
	for time.Now().Before(deadline) {
		select {
		case <-n.kubelet.exited():
			return fmt.Errorf("kubelet exited during start-up; see %s", n.kubelet.log)
		case <-n.containerd.exited():
			return fmt.Errorf("containerd exited during start-up; see %s", n.containerd.log)
		default:
		}
		data, code, err := n.api("GET", "/api/v1/nodes/"+n.name, nil)
		if err == nil && code == http.StatusOK {
			var obj struct {
				Spec struct {
					Taints []struct{ Key string } `json:"taints"`
				} `json:"spec"`
				Status struct {
					Conditions []struct{ Type, Status, Message string } `json:"conditions"`
				} `json:"status"`
			}
			if json.Unmarshal(data, &obj) == nil {
				ready := false
				for _, c := range obj.Status.Conditions {
					if c.Type == "Ready" {
						ready = c.Status == "True"
						last = "Ready=" + c.Status + ": " + c.Message
					}
				}
				if ready && len(obj.Spec.Taints) == 0 {
					return nil
				}
				if ready {
					last = fmt.Sprintf("Ready but tainted %v", obj.Spec.Taints)
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("node %s not ready after %v (%s); see %s", n.name, timeout, last, n.kubelet.log)
}

func (n *node) info(started time.Time) nodeInfo {
	return nodeInfo{Name: n.name, Bridge: n.id, Gateway: n.gateway, Subnet: n.subnet,
		ContainerdSock: n.sock(), KubeletRootDir: n.kubeletRoot(), CgroupRoot: "/" + n.id,
		ContainerdPID: n.containerd.pid(), KubeletPID: n.kubelet.pid(), SchedulerPID: n.scheduler.pid(),
		ReadyAfterStart: time.Since(started).Round(time.Millisecond).String()}
}

// drainPods deletes every pod (controllers are already stopped, so none comes back) and waits
// until the kubelet has stopped them and their sandboxes: that tears their networks down and
// releases their addresses.
func (n *node) drainPods(timeout time.Duration) {
	if n.client == nil {
		return
	}
	grace := int64(2)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		data, code, err := n.api("GET", "/api/v1/pods", nil)
		if err != nil || code != http.StatusOK {
			log.Printf("node: list pods: %v (HTTP %d)", err, code)
			return
		}
		var list struct {
			Items []struct {
				Metadata struct{ Name, Namespace string } `json:"metadata"`
				Spec     struct {
					NodeName string `json:"nodeName"`
				} `json:"spec"`
			} `json:"items"`
		}
		if json.Unmarshal(data, &list) != nil {
			return
		}
		onNode := 0
		for _, p := range list.Items {
			if p.Spec.NodeName == "" {
				_, _, _ = n.api("DELETE", "/api/v1/namespaces/"+p.Metadata.Namespace+"/pods/"+p.Metadata.Name,
					map[string]any{"gracePeriodSeconds": 0})
				continue
			}
			onNode++
			if _, code, err := n.api("DELETE", "/api/v1/namespaces/"+p.Metadata.Namespace+"/pods/"+p.Metadata.Name,
				map[string]any{"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": grace}); err != nil || code >= 300 && code != http.StatusNotFound {
				log.Printf("node: delete pod %s/%s: %v (HTTP %d)", p.Metadata.Namespace, p.Metadata.Name, err, code)
			}
		}
		if onNode == 0 {
			log.Printf("node: every pod stopped")
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	log.Printf("node: pods still present after %v; stopping them through containerd", timeout)
}

// teardown removes everything the node created on the host, in an order that leaves nothing:
// pods, kubelet, containers and their shims, containerd, mounts, the bridge, the iptables rule,
// the cgroups, the IPAM state and the /run folder. Safe on a partly started node.
func (n *node) teardown() {
	if n.scheduler != nil {
		n.scheduler.stop()
	}
	if n.kubelet != nil && n.containerd != nil {
		n.drainPods(30 * time.Second)
		// Give the kubelet a moment to stop the sandboxes of the pods it just finished.
		time.Sleep(time.Second)
	}
	if n.kubelet != nil {
		n.kubelet.stop()
	}
	if n.containerd != nil {
		// Whatever still runs: kill its tasks, so that their shims exit.
		out, _ := exec.Command("ctr", "--address", n.sock(), "-n", "k8s.io", "tasks", "ls", "-q").Output()
		for _, id := range strings.Fields(string(out)) {
			_ = exec.Command("ctr", "--address", n.sock(), "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", id).Run()
		}
		time.Sleep(500 * time.Millisecond)
		for _, id := range strings.Fields(string(out)) {
			_ = exec.Command("ctr", "--address", n.sock(), "-n", "k8s.io", "tasks", "delete", "-f", id).Run()
		}
		n.containerd.stop()
	}
	n.killShims()
	n.killCgroupProcesses()
	n.removePodNetworks()
	n.unmountAll()
	if n.dnat != nil {
		if err := run1("iptables", append([]string{"-w", "-D"}, n.dnat...)...); err != nil {
			log.Printf("node: %v", err)
		}
	}
	_ = exec.Command("ip", "link", "del", n.id).Run()
	n.removeCgroups()
	_ = os.RemoveAll(filepath.Join(n.dir, "cni-ipam"))
	_ = os.RemoveAll(n.run)
	log.Printf("node %s torn down", n.id)
}

// killShims kills the containerd-shim processes of this node's containerd (found by its socket in
// their command line), which outlive containerd by design.
func (n *node) killShims() {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 0 && strings.Contains(filepath.Base(args[0]), "containerd-shim") &&
			bytes.Contains(cmdline, []byte(n.sock())) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// killCgroupProcesses kills whatever still runs in the node's cgroups (containers whose shim is
// gone): every process there is one of this node's pods.
func (n *node) killCgroupProcesses() {
	for attempt := 0; attempt < 50; attempt++ {
		found := 0
		roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + n.id)
		for _, root := range roots {
			_ = filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
				if err != nil || info.IsDir() || info.Name() != "cgroup.procs" {
					return nil
				}
				data, _ := os.ReadFile(path)
				for _, f := range strings.Fields(string(data)) {
					if pid, err := strconv.Atoi(f); err == nil {
						found++
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
				return nil
			})
		}
		if found == 0 {
			return
		}
		if attempt == 0 {
			log.Printf("node: killed %d processes left in the node's cgroups", found)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removePodNetworks deletes the pods' network namespaces and host-side veths that are still
// attached to the node's bridge (a pod whose sandbox the kubelet did not stop): `ip` names each
// veth's peer namespace (cni-<uuid> under /run/netns).
func (n *node) removePodNetworks() {
	out, _ := exec.Command("ip", "-o", "link", "show", "master", n.id).Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		veth := strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]
		for i, w := range f {
			if w == "link-netns" && i+1 < len(f) {
				_ = exec.Command("ip", "netns", "delete", f[i+1]).Run()
			}
		}
		_ = exec.Command("ip", "link", "del", veth).Run()
	}
}

// unmountAll unmounts, deepest first, every mount under the node's folders (the kubelet's volume
// tmpfs, containerd's overlay root filesystems and shm).
func (n *node) unmountAll() {
	for pass := 0; pass < 3; pass++ {
		data, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return
		}
		var targets []string
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) < 5 {
				continue
			}
			t := strings.ReplaceAll(f[4], `\040`, " ")
			if strings.HasPrefix(t, n.dir+"/") || strings.HasPrefix(t, n.run+"/") || t == n.run {
				targets = append(targets, t)
			}
		}
		if len(targets) == 0 {
			return
		}
		// Longest path first: children before parents.
		for i := 0; i < len(targets); i++ {
			for j := i + 1; j < len(targets); j++ {
				if len(targets[j]) > len(targets[i]) {
					targets[i], targets[j] = targets[j], targets[i]
				}
			}
		}
		for _, t := range targets {
			if err := syscall.Unmount(t, 0); err != nil {
				_ = syscall.Unmount(t, syscall.MNT_DETACH)
			}
		}
	}
}

// makeCgroupRoot creates the kubelet's cgroupRoot (/jko-<id>) in every cgroup hierarchy: the
// kubelet refuses to start when it is missing. A cpuset child starts with no CPU and no memory
// node: it gets its parent's.
func (n *node) makeCgroupRoot() error {
	procs, _ := filepath.Glob("/sys/fs/cgroup/*/cgroup.procs")
	for _, p := range procs {
		parent := filepath.Dir(p)
		dir := filepath.Join(parent, n.id)
		if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(parent, f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return fmt.Errorf("cgroup %s: %w", filepath.Join(dir, f), err)
				}
			}
		}
	}
	return nil
}

// removeCgroups removes the node's cgroup folder (cgroupRoot /jko-<id>) in every hierarchy,
// deepest first.
func (n *node) removeCgroups() {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + n.id)
	if st, err := os.Stat("/sys/fs/cgroup/" + n.id); err == nil && st.IsDir() {
		roots = append(roots, "/sys/fs/cgroup/"+n.id)
	}
	for _, root := range roots {
		var dirs []string
		_ = filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
			if err == nil && info.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil {
				log.Printf("node: remove cgroup %s: %v", dirs[i], err)
			}
		}
	}
}

// imageName reads the image reference that an OCI archive written by test-env/image.sh carries
// (its index's org.opencontainers.image.ref.name), the name containerd gives it on import.
func imageName(archive string) (string, error) {
	out, err := exec.Command("tar", "-xOf", archive, "index.json").Output()
	if err != nil {
		return "", fmt.Errorf("read index.json of %s: %w", archive, err)
	}
	var index struct {
		Manifests []struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(out, &index); err != nil || len(index.Manifests) == 0 {
		return "", fmt.Errorf("%s: no manifest in index.json", archive)
	}
	name := index.Manifests[0].Annotations["org.opencontainers.image.ref.name"]
	if name == "" {
		return "", fmt.Errorf("%s: the manifest has no org.opencontainers.image.ref.name", archive)
	}
	return name, nil
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
