// Command argocd-health-check runs Argo CD resource health checks the way Argo CD runs them and
// compares the results with their tests.
//
//	argocd-health-check [-argocd-cm FILE] <dir>...
//
// Each <dir> is laid out as Argo CD's resource_customizations/<group>/<kind>/ folders are:
// health.lua, health_test.yaml (`tests: [{healthStatus: {status, message}, inputPath}]`) and the
// inputs under testdata/. Every input is evaluated twice, and both results must equal the
// expected status and message:
//
//   - as the application controller does: the argocd-cm ConfigMap read by Argo CD's settings
//     manager (GetResourceOverrides, over a fake clientset), its overrides as
//     lua.ResourceHealthOverrides, and gitops-engine's health.GetResourceHealth. The ConfigMap's
//     data is FILE's `data:` (a ConfigMap or a merge patch of one), else the one key
//     `resource.customizations.health.<group>_<kind>` holding health.lua. Either way the Lua
//     standard libraries are off unless argocd-cm turns them on, as in Argo CD;
//   - as Argo CD's own resource_customizations tests do: lua.VM{UseOpenLibs: true} and
//     ExecuteHealthLua of health.lua.
//
// Every file under testdata/ must be an input of some test. The exit status is 1 when any
// result differs or any file is left out, 2 when the inputs cannot be read.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/argoproj/argo-cd/gitops-engine/pkg/health"
	log "github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/argo-cd/v3/util/settings"
)

// One evaluation of an input: how it was run and what it gave.
type result struct {
	how string
	got *health.HealthStatus
	err error
}

type testFile struct {
	Tests []struct {
		InputPath    string              `json:"inputPath"`
		HealthStatus health.HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

func main() {
	cmPath := flag.String("argocd-cm", "", "argocd-cm ConfigMap (or merge patch) whose data holds the checks")
	flag.Parse()
	if flag.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health-check [-argocd-cm FILE] <dir>...")
		os.Exit(2)
	}
	// The settings manager logs every read at info level.
	log.SetLevel(log.WarnLevel)
	var cmData map[string]string
	if *cmPath != "" {
		body, err := os.ReadFile(*cmPath)
		if err == nil {
			var cm struct {
				Data map[string]string `json:"data"`
			}
			err = yaml.Unmarshal(body, &cm)
			cmData = cm.Data
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", *cmPath, err)
			os.Exit(2)
		}
	}
	failed := 0
	for _, dir := range flag.Args() {
		n, err := check(dir, cmData)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", dir, err)
			os.Exit(2)
		}
		failed += n
	}
	if failed > 0 {
		fmt.Printf("%d check(s) failed\n", failed)
		os.Exit(1)
	}
}

// controllerOverrides are the resource overrides the application controller would have with
// this argocd-cm data: Argo CD's settings manager reads them from the ConfigMap (labelled as an
// Argo CD install labels it) through a fake clientset.
func controllerOverrides(data map[string]string) (lua.ResourceHealthOverrides, error) {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:      "argocd-cm",
			Namespace: "argocd",
			Labels:    map[string]string{"app.kubernetes.io/part-of": "argocd"},
		},
		Data: data,
	}
	mgr := settings.NewSettingsManager(context.Background(), fake.NewClientset(cm), "argocd")
	overrides, err := mgr.GetResourceOverrides()
	if err != nil {
		return nil, fmt.Errorf("argocd-cm: %w", err)
	}
	return lua.ResourceHealthOverrides(overrides), nil
}

// check runs every test of one folder; returns how many failed.
func check(dir string, cmData map[string]string) (int, error) {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return 0, err
	}
	body, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		return 0, err
	}
	var tests testFile
	if err := yaml.UnmarshalStrict(body, &tests); err != nil {
		return 0, fmt.Errorf("health_test.yaml: %w", err)
	}
	if len(tests.Tests) == 0 {
		return 0, fmt.Errorf("health_test.yaml has no tests")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return 0, err
	}
	key := filepath.Base(filepath.Dir(abs)) + "/" + filepath.Base(abs)
	if cmData == nil {
		group, kind := filepath.Base(filepath.Dir(abs)), filepath.Base(abs)
		cmData = map[string]string{"resource.customizations.health." + group + "_" + kind: string(script)}
	}
	controller, err := controllerOverrides(cmData)
	if err != nil {
		return 0, err
	}
	upstream := lua.VM{UseOpenLibs: true}

	failed := 0
	used := map[string]bool{}
	for _, t := range tests.Tests {
		used[filepath.Clean(t.InputPath)] = true
		obj, err := load(filepath.Join(dir, t.InputPath))
		if err != nil {
			return 0, err
		}
		want := t.HealthStatus
		var results [2]result
		results[0].how = "controller: argocd-cm through the settings manager"
		results[0].got, results[0].err = health.GetResourceHealth(obj, controller)
		results[1].how = "resource_customizations test VM with open libs"
		results[1].got, results[1].err = upstream.ExecuteHealthLua(obj, string(script))
		ok := true
		for _, r := range results {
			switch {
			case r.err != nil:
				ok = false
				fmt.Printf("FAIL %s [%s]: %v\n", t.InputPath, r.how, r.err)
			case r.got == nil:
				ok = false
				fmt.Printf("FAIL %s [%s]: no health check applied (is the object a %s?)\n", t.InputPath, r.how, key)
			case *r.got != want:
				ok = false
				fmt.Printf("FAIL %s [%s]:\n  got  %s: %q\n  want %s: %q\n", t.InputPath, r.how, r.got.Status, r.got.Message, want.Status, want.Message)
			}
		}
		if ok {
			fmt.Printf("ok   %s: %s: %s\n", t.InputPath, want.Status, want.Message)
		} else {
			failed++
		}
	}

	inputs, err := filepath.Glob(filepath.Join(dir, "testdata", "*"))
	if err != nil {
		return 0, err
	}
	sort.Strings(inputs)
	for _, in := range inputs {
		rel, err := filepath.Rel(dir, in)
		if err != nil {
			return 0, err
		}
		if !used[rel] {
			failed++
			fmt.Printf("FAIL %s: not the input of any test in health_test.yaml\n", rel)
		}
	}
	fmt.Printf("%s: %d test(s), %d failed\n", key, len(tests.Tests), failed)
	return failed, nil
}

// load reads a YAML object the way the controller holds a live one: decoded from JSON, whole
// numbers as int64.
func load(path string) (*unstructured.Unstructured, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSON(body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(js); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}
