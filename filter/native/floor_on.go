//go:build nativefloor

package main

/*
#cgo CFLAGS: -DDP_FLOOR
*/
import "C"

// A build with -tags nativefloor is a measuring instrument, never a
// filter: its request-headers hook (floor.c) is C that makes the edits a
// cached allow makes and returns without entering Go or checking
// anything. Measured beside no auth, it is the floor of any filter that
// strips the token and sets an identity through this ABI. The Go check
// (dp_go_http_request_headers) is built but never called.
