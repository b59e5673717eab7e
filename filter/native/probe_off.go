//go:build !nativeprobe

package main

// Without -tags nativeprobe the module counts nothing and has no probe path.

func countBodyCall() {}

func probeReply(string) (string, bool) { return "", false }
