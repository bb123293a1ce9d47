//go:build tools

// Package tools pins the command the local stack builds from this module:
//
//	go build -o <bin>/etcd go.etcd.io/etcd/server/v3
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
