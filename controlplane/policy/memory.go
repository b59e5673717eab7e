package policy

import "runtime/debug"

// largeDocument is the size from which a policy's working memory is worth
// giving back at once: translating a policy of MaxRoutes routes (about
// 500 KB) takes about 50 MB, which Go would otherwise keep for minutes.
const largeDocument = 256 << 10

// ReleaseMemory returns the heap's free memory to the system now when a
// document of size bytes was just handled (applied, refused or replaced).
// Go's own pace would keep it for minutes: its heap goal only shrinks at
// the next collection, and an idle control plane allocates too little to
// start one.
func ReleaseMemory(size int) {
	if size >= largeDocument {
		debug.FreeOSMemory()
	}
}
