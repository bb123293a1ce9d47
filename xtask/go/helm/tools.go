//go:build tools

// Package tools pins the command the local stack builds from this module:
//
//	go build -o <bin>/helm helm.sh/helm/v3/cmd/helm
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
