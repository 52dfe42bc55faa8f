// fetch is a static HTTP client for TestNetwork: busybox's wget, statically linked
// with glibc, crashes in a chroot that lacks glibc's NSS modules.
//
// usage: fetch URL FILE
package main

import (
	"io"
	"net/http"
	"os"
)

func main() {
	resp, err := http.Get(os.Args[1])
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	defer resp.Body.Close()
	f, err := os.Create(os.Args[2])
	if err == nil {
		_, err = io.Copy(f, resp.Body)
	}
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
}
