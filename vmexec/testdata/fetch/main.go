// fetch is a static HTTP client for TestNetwork: busybox's wget, statically linked
// with glibc, crashes in a chroot that lacks glibc's NSS modules.
//
// usage: fetch URL FILE
//
// It prints "fetched URL" or "unreachable URL: why", and exits 0 either way, so
// that one job can try several addresses.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	c := &http.Client{Timeout: 8 * time.Second}
	resp, err := c.Get(os.Args[1])
	if err == nil {
		defer resp.Body.Close()
		var f *os.File
		if f, err = os.Create(os.Args[2]); err == nil {
			_, err = io.Copy(f, resp.Body)
		}
	}
	if err != nil {
		fmt.Printf("unreachable %s: %v\n", os.Args[1], err)
		return
	}
	fmt.Printf("fetched %s\n", os.Args[1])
}
