//go:build tools

// Package tools pins the commands the local stack builds from this module:
//
//	go build -o <bin> k8s.io/kubernetes/cmd/kube-apiserver (and the others below)
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
