// Command controlplane runs a small, real Kubernetes control plane on 127.0.0.1 for tests and the
// quick start: etcd embedded in this process, kube-apiserver and kube-controller-manager (garbage
// collector and namespace controllers only) as child processes of this same binary.
//
//	controlplane --dir DIR [--exit-on-stdin-eof] [--node --pause-image ARCHIVE [--image ARCHIVE]...]
//
// With --node (as root) it also runs a one-node cluster (node.go): Debian's containerd with the
// given OCI archives imported, a kubelet and kube-scheduler (sub-commands of this binary), a CNI
// bridge, and the controllers and admission a node needs (ServiceAccount tokens, Deployments,
// endpoints); it waits until the node is Ready and untainted before READY, and tears it all down
// before it exits.
//
// It writes DIR/kubeconfig (admin, client certificate in group system:masters) and DIR/ready.json,
// prints "READY <kubeconfig>" on stdout, and runs until SIGTERM/SIGINT (or stdin closes when
// --exit-on-stdin-eof is given). SIGUSR1 restarts kube-apiserver on the same port and etcd data, to
// test clients against an API server restart.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	// One binary, three programs: the children are this executable re-run with a sub-command, so
	// the heavy Kubernetes code is compiled and linked once.
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "kube-apiserver":
			os.Args = os.Args[1:]
			os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
		case "kube-controller-manager":
			os.Args = os.Args[1:]
			os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
		case "kube-scheduler":
			os.Args = os.Args[1:]
			os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
		case "kubelet":
			os.Args = os.Args[1:]
			os.Exit(cli.Run(kubelet.NewKubeletCommand(context.Background())))
		}
	}
	if err := run(); err != nil {
		log.Fatalf("controlplane: %v", err)
	}
}

type readyInfo struct {
	Kubeconfig   string `json:"kubeconfig"`
	Server       string `json:"server"`
	Etcd         string `json:"etcd"`
	Version      string `json:"version"`
	PID          int    `json:"pid"`
	APIServerPID int    `json:"apiserverPid"`
	// With --node.
	Node *nodeInfo `json:"node,omitempty"`
}

func run() error {
	dir := flag.String("dir", "", "working directory (certificates, etcd data, logs, kubeconfig)")
	stdinEOF := flag.Bool("exit-on-stdin-eof", false, "shut down when stdin is closed (the parent died)")
	withNode := flag.Bool("node", false, "also run a node: containerd, kubelet, kube-scheduler, a CNI bridge (needs root)")
	pauseArchive := flag.String("pause-image", "", "with --node: OCI archive of the pause (sandbox) image")
	var images stringList
	flag.Var(&images, "image", "with --node: an OCI archive to import into containerd (repeatable)")
	flag.Parse()
	if *dir == "" {
		return fmt.Errorf("--dir is required")
	}
	log.SetPrefix("controlplane: ")
	log.SetFlags(log.Ltime)
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}

	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	pki, err := writePKI(filepath.Join(abs, "pki"))
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}

	etcd, err := startEtcd(filepath.Join(abs, "etcd"), etcdClient, etcdPeer)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	log.Printf("etcd ready at %s", etcdURL)

	server := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	api := &child{
		name: "kube-apiserver",
		log:  filepath.Join(abs, "kube-apiserver.log"),
		cmd: append([]string{self, "kube-apiserver"},
			"--advertise-address=127.0.0.1",
			"--bind-address=127.0.0.1",
			"--secure-port="+strconv.Itoa(apiPort),
			"--cert-dir="+filepath.Join(abs, "apiserver-certs"),
			"--tls-cert-file="+pki.servingCert,
			"--tls-private-key-file="+pki.servingKey,
			"--client-ca-file="+pki.caCert,
			"--etcd-servers="+etcdURL,
			"--service-cluster-ip-range=10.0.0.0/24",
			"--allow-privileged=true",
			"--authorization-mode=RBAC",
			"--service-account-issuer="+server+"/",
			"--service-account-key-file="+pki.saPub,
			"--service-account-signing-key-file="+pki.saKey,
			"--enable-priority-and-fairness=false",
			"--v=1",
		),
	}
	if *withNode {
		// Webhooks and aggregated APIs behind a Service are called at their endpoints' addresses:
		// there is no kube-proxy to route Service addresses.
		api.cmd = append(api.cmd, "--enable-aggregator-routing=true")
	} else {
		// No kubelet: pods never run, and envtest-like tests create pods without ServiceAccounts.
		api.cmd = append(api.cmd, "--disable-admission-plugins=ServiceAccount")
	}
	kubeconfig := filepath.Join(abs, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, server, pki); err != nil {
		return err
	}
	kcm := &child{
		name: "kube-controller-manager",
		log:  filepath.Join(abs, "kube-controller-manager.log"),
		cmd: []string{self, "kube-controller-manager",
			"--kubeconfig=" + kubeconfig,
			"--controllers=garbage-collector-controller,namespace-controller",
			"--leader-elect=false",
			"--secure-port=0",
			"--use-service-account-credentials=false",
			"--v=1",
		},
	}
	if *withNode {
		kcm.cmd[3] = "--controllers=garbage-collector-controller,namespace-controller," +
			"deployment-controller,replicaset-controller,serviceaccount-controller," +
			"serviceaccount-token-controller,root-ca-certificate-publisher-controller," +
			"node-lifecycle-controller,clusterrole-aggregation-controller," +
			"endpoints-controller,endpointslice-controller"
		kcm.cmd = append(kcm.cmd, "--service-account-private-key-file="+pki.saKey, "--root-ca-file="+pki.caCert)
	}

	defer api.stop()
	defer kcm.stop()
	if err := api.start(); err != nil {
		return err
	}
	client, err := pki.httpClient()
	if err != nil {
		return err
	}
	version, err := waitReady(client, server, api, 3*time.Minute)
	if err != nil {
		return err
	}
	if err := kcm.start(); err != nil {
		return err
	}

	info := readyInfo{Kubeconfig: kubeconfig, Server: server, Etcd: etcdURL, Version: version,
		PID: os.Getpid(), APIServerPID: api.pid()}
	if *withNode {
		started := time.Now()
		if *pauseArchive == "" {
			return fmt.Errorf("--node needs --pause-image")
		}
		pause, err := imageName(*pauseArchive)
		if err != nil {
			return err
		}
		n, err := newNode(filepath.Join(abs, "node"), apiPort, append([]string{*pauseArchive}, images...), pause)
		if err != nil {
			return err
		}
		n.client, n.server = client, server
		// Registered before anything is created, so that a failure half-way is cleaned up too;
		// runs before kcm and the API server stop (deferred earlier), while pods can be deleted.
		defer func() {
			kcm.stop() // first, so that no controller recreates the pods being drained
			n.teardown()
		}()
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			return err
		}
		if err := n.network(); err != nil {
			return fmt.Errorf("node network: %w", err)
		}
		if err := n.startContainerd(); err != nil {
			return err
		}
		if err := n.startScheduler(self, kubeconfig); err != nil {
			return err
		}
		if err := n.startKubelet(self, kubeconfig); err != nil {
			return err
		}
		if err := n.waitReady(2 * time.Minute); err != nil {
			return err
		}
		ni := n.info(started)
		info.Node = &ni
		log.Printf("node %s ready in %s (bridge %s, pods in %s)", n.name, ni.ReadyAfterStart, n.id, n.subnet)
	}
	if err := writeJSON(filepath.Join(abs, "ready.json"), info); err != nil {
		return err
	}
	fmt.Printf("READY %s\n", kubeconfig)
	log.Printf("Kubernetes %s serving at %s (kubeconfig %s)", version, server, kubeconfig)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if *stdinEOF {
		go func() {
			_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
			log.Printf("stdin closed: shutting down")
			cancel()
		}()
	}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-signals:
			if s != syscall.SIGUSR1 {
				log.Printf("%v: shutting down", s)
				return nil
			}
			log.Printf("SIGUSR1: restarting kube-apiserver")
			api.stop()
			if err := api.start(); err != nil {
				return err
			}
			if _, err := waitReady(client, server, api, 2*time.Minute); err != nil {
				return err
			}
			info.APIServerPID = api.pid()
			if err := writeJSON(filepath.Join(abs, "ready.json"), info); err != nil {
				return err
			}
			log.Printf("kube-apiserver restarted")
		case <-api.exited():
			return fmt.Errorf("kube-apiserver exited unexpectedly; see %s", api.log)
		}
	}
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func startEtcd(dir string, clientPort, peerPort int) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.Name = "controlplane"
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = true
	clientURL, err := parseURL(fmt.Sprintf("http://127.0.0.1:%d", clientPort))
	if err != nil {
		return nil, err
	}
	peerURL, err := parseURL(fmt.Sprintf("http://127.0.0.1:%d", peerPort))
	if err != nil {
		return nil, err
	}
	cfg.ListenClientUrls = clientURL
	cfg.AdvertiseClientUrls = clientURL
	cfg.ListenPeerUrls = peerURL
	cfg.AdvertisePeerUrls = peerURL
	cfg.InitialCluster = fmt.Sprintf("%s=%s", cfg.Name, peerURL[0].String())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(time.Minute):
		e.Close()
		return nil, fmt.Errorf("not ready after a minute")
	}
}

// waitReady polls /readyz until the API server answers ok, then returns its /version.
func waitReady(client *http.Client, server string, api *child, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-api.exited():
			return "", fmt.Errorf("kube-apiserver exited during start-up; see %s", api.log)
		default:
		}
		resp, err := client.Get(server + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return fetchVersion(client, server)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "", fmt.Errorf("kube-apiserver not ready after %v; see %s", timeout, api.log)
}

func fetchVersion(client *http.Client, server string) (string, error) {
	resp, err := client.Get(server + "/version")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var v struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "", err
	}
	return v.GitVersion, nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// child is a control-plane component run as a child process, killed if this process dies.
type child struct {
	name string
	log  string
	cmd  []string

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{}
}

func (c *child) start() error {
	out, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.cmd[0], c.cmd[1:]...)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = out.Close()
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = out.Close()
		close(done)
	}()
	c.mu.Lock()
	c.proc, c.done = cmd, done
	c.mu.Unlock()
	return nil
}

func (c *child) exited() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		return nil
	}
	return c.done
}

func (c *child) pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil || c.proc.Process == nil {
		return 0
	}
	return c.proc.Process.Pid
}

// stop asks the child to exit, and kills it if it has not within ten seconds.
func (c *child) stop() {
	c.mu.Lock()
	proc, done := c.proc, c.done
	c.mu.Unlock()
	if proc == nil {
		return
	}
	_ = proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = proc.Process.Kill()
		<-done
	}
}
