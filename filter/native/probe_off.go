//go:build !nativeprobe

package main

// #include "dp_abi.h"
import "C"

// Without -tags nativeprobe the module counts nothing and has no probe path.

func probe(C.uintptr_t) bool { return false }

func countGoEntry() {}

func netProbe(*netHost) {}
