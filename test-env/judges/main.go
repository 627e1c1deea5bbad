// Command judges tells how Argo CD and Flux judge the health of Kubernetes objects, with their
// own code (built by test-env/setup.sh; the tests in tests/health_judges.rs run it):
//
//   - Argo CD: the argocd-cm patch (deploy/argocd/argocd-cm.yaml) is merged into a stock argocd-cm
//     ConfigMap the way `kubectl patch --type merge` does, read by Argo CD's settings manager, and
//     each object is judged by gitops-engine's health.GetResourceHealth with Argo CD's Lua health
//     overrides (util/lua), exactly what the application controller calls;
//   - kstatus: sigs.k8s.io/cli-utils status.Compute, what Flux's `healthChecks` and `wait` use;
//   - Flux healthCheckExprs: the CEL expressions of a Kustomization, evaluated by
//     github.com/fluxcd/pkg/runtime/cel's StatusEvaluator, what kustomize-controller uses.
//
// Usage:
//
//	judges -argocd-cm STOCK.yaml -argocd-cm-patch PATCH.yaml [-flux-kustomization K.yaml] FILE... | -
//
// Objects are read as YAML or JSON, several per file (YAML documents or concatenated JSON); `-`
// is stdin. The verdicts go to stdout as one JSON array, one entry per object, in input order.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/argoproj/argo-cd/gitops-engine/v3/pkg/health"
	appv1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	"github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/argo-cd/v3/util/settings"
	"github.com/fluxcd/pkg/apis/kustomize"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

const argocdNamespace = "argocd"

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

type result struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Name       string   `json:"name"`
	ArgoCD     verdict  `json:"argocd"`
	Kstatus    verdict  `json:"kstatus"`
	FluxCEL    *verdict `json:"fluxCEL,omitempty"`
}

func main() {
	stockPath := flag.String("argocd-cm", "", "a stock argocd-cm ConfigMap (Argo CD's manifests/base/config/argocd-cm.yaml)")
	patchPath := flag.String("argocd-cm-patch", "", "the patch an admin merges into argocd-cm (deploy/argocd/argocd-cm.yaml)")
	fluxPath := flag.String("flux-kustomization", "", "a Flux Kustomization whose spec.healthCheckExprs to evaluate (optional)")
	flag.Parse()
	if err := run(*stockPath, *patchPath, *fluxPath, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "judges:", err)
		os.Exit(1)
	}
}

func run(stockPath, patchPath, fluxPath string, inputs []string) error {
	if stockPath == "" || patchPath == "" {
		return errors.New("-argocd-cm and -argocd-cm-patch are required")
	}
	if len(inputs) == 0 {
		return errors.New("no objects: give files, or - for stdin")
	}
	ctx := context.Background()
	overrides, err := argocdOverrides(ctx, stockPath, patchPath)
	if err != nil {
		return err
	}
	var evaluators map[string]*fluxcel.StatusEvaluator
	if fluxPath != "" {
		if evaluators, err = fluxEvaluators(fluxPath); err != nil {
			return err
		}
	}
	var objects []*unstructured.Unstructured
	for _, input := range inputs {
		objs, err := readObjects(input)
		if err != nil {
			return err
		}
		objects = append(objects, objs...)
	}

	results := make([]result, 0, len(objects))
	for _, obj := range objects {
		r := result{
			APIVersion: obj.GetAPIVersion(),
			Kind:       obj.GetKind(),
			Namespace:  obj.GetNamespace(),
			Name:       obj.GetName(),
		}
		// What the application controller does (controller/health.go): an error leaves the
		// health that GetResourceHealth returned with it (Unknown, the error as message).
		hs, err := health.GetResourceHealth(obj, lua.ResourceHealthOverrides(overrides))
		switch {
		case hs != nil:
			r.ArgoCD = verdict{Status: string(hs.Status), Message: hs.Message}
		case err == nil:
			r.ArgoCD = verdict{Status: "None", Message: "no health check for this kind"}
		}
		if err != nil {
			r.ArgoCD.Error = err.Error()
		}

		if ks, err := status.Compute(obj); err != nil {
			r.Kstatus = verdict{Status: "Unknown", Error: err.Error()}
		} else {
			r.Kstatus = verdict{Status: ks.Status.String(), Message: ks.Message}
		}

		if ev := evaluators[obj.GetAPIVersion()+"/"+obj.GetKind()]; ev != nil {
			if fs, err := ev.Evaluate(ctx, obj); err != nil {
				r.FluxCEL = &verdict{Status: "Unknown", Error: err.Error()}
			} else {
				r.FluxCEL = &verdict{Status: fs.Status.String(), Message: fs.Message}
			}
		}
		results = append(results, r)
	}
	out, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s\n", out)
	return err
}

// argocdOverrides merges the patch into the stock argocd-cm (a JSON merge patch, as
// `kubectl patch --type merge --patch-file` does) and reads the resource customizations with Argo
// CD's settings manager, from a fake API server holding only argocd-cm and argocd-secret.
func argocdOverrides(ctx context.Context, stockPath, patchPath string) (map[string]appv1.ResourceOverride, error) {
	stock, err := yamlFileAsJSON(stockPath)
	if err != nil {
		return nil, err
	}
	patch, err := yamlFileAsJSON(patchPath)
	if err != nil {
		return nil, err
	}
	merged, err := jsonpatch.MergePatch(stock, patch)
	if err != nil {
		return nil, fmt.Errorf("merge %s into %s: %w", patchPath, stockPath, err)
	}
	var cm corev1.ConfigMap
	if err := json.Unmarshal(merged, &cm); err != nil {
		return nil, fmt.Errorf("the merged argocd-cm is not a ConfigMap: %w", err)
	}
	if cm.Name != "argocd-cm" {
		return nil, fmt.Errorf("the merged ConfigMap is named %q, not argocd-cm", cm.Name)
	}
	cm.Namespace = argocdNamespace
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      "argocd-secret",
			Namespace: argocdNamespace,
			Labels:    map[string]string{"app.kubernetes.io/part-of": "argocd"},
		},
		Data: map[string][]byte{"server.secretkey": []byte("judges")},
	}
	manager := settings.NewSettingsManager(ctx, fake.NewClientset(&cm, secret), argocdNamespace)
	if err := manager.ResyncInformers(); err != nil {
		return nil, fmt.Errorf("Argo CD settings: %w", err)
	}
	overrides, err := manager.GetResourceOverrides()
	if err != nil {
		return nil, fmt.Errorf("Argo CD resource customizations: %w", err)
	}
	return overrides, nil
}

// fluxEvaluators reads a Flux Kustomization and returns a CEL status evaluator for each
// apiVersion/kind of its spec.healthCheckExprs.
func fluxEvaluators(path string) (map[string]*fluxcel.StatusEvaluator, error) {
	data, err := yamlFileAsJSON(path)
	if err != nil {
		return nil, err
	}
	var k struct {
		Kind string `json:"kind"`
		Spec struct {
			HealthCheckExprs []kustomize.CustomHealthCheck `json:"healthCheckExprs"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if k.Kind != "Kustomization" || len(k.Spec.HealthCheckExprs) == 0 {
		return nil, fmt.Errorf("%s: not a Kustomization with spec.healthCheckExprs", path)
	}
	evaluators := map[string]*fluxcel.StatusEvaluator{}
	for _, hc := range k.Spec.HealthCheckExprs {
		ev, err := fluxcel.NewStatusEvaluator(&hc.HealthCheckExpressions)
		if err != nil {
			return nil, fmt.Errorf("%s: healthCheckExprs for %s/%s: %w", path, hc.APIVersion, hc.Kind, err)
		}
		evaluators[hc.APIVersion+"/"+hc.Kind] = ev
	}
	return evaluators, nil
}

func yamlFileAsJSON(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

func readObjects(path string) ([]*unstructured.Unstructured, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(os.Stdin)
		path = "<stdin>"
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	var objects []*unstructured.Unstructured
	decoder := k8syaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return objects, nil
			}
			return nil, fmt.Errorf("%s: object %d: %w", path, len(objects)+1, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 || string(raw) == "null" {
			continue
		}
		// As the API machinery decodes objects, so whole numbers are int64 (a generation,
		// observedGeneration), which kstatus and the CEL evaluator need.
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(raw); err != nil {
			return nil, fmt.Errorf("%s: object %d: %w", path, len(objects)+1, err)
		}
		objects = append(objects, obj)
	}
}
