package cas

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// httpBackend is a remote on a plain HTTP server: GET and HEAD read, PUT writes
// (nginx's WebDAV module with create_full_put_path, or any object server). A PUT
// that must not replace a file is sent with If-None-Match: * (a server that does
// not honour it is asked with HEAD first by the callers). Listing a directory
// reads nginx's autoindex in JSON (autoindex on; autoindex_format json).
type httpBackend struct {
	base   string // scheme://host/prefix, no trailing slash
	user   *url.Userinfo
	client *http.Client
}

func newHTTPBackend(u *url.URL) *httpBackend {
	c := *u
	c.User = nil
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 32
	tr.ResponseHeaderTimeout = 30 * time.Second // a server that stalls is a server that failed
	return &httpBackend{base: strings.TrimSuffix(c.String(), "/"), user: u.User, client: &http.Client{Transport: tr}}
}

func (b *httpBackend) do(ctx context.Context, method, key string, body io.ReadSeeker, size int64, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, b.base+"/"+key, nil)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Body = io.NopCloser(body)
		req.ContentLength = size
		req.GetBody = func() (io.ReadCloser, error) {
			_, err := body.Seek(0, io.SeekStart)
			return io.NopCloser(body), err
		}
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if b.user != nil {
		pw, _ := b.user.Password()
		req.SetBasicAuth(b.user.Username(), pw)
	}
	return b.client.Do(req)
}

func statusError(resp *http.Response) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return fmt.Errorf("%s %s: %s: %s", resp.Request.Method, resp.Request.URL.Redacted(), resp.Status, strings.TrimSpace(string(msg)))
}

func (b *httpBackend) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	resp, err := b.do(ctx, http.MethodGet, key, nil, 0, nil)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Body, nil
	case http.StatusNotFound:
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	defer resp.Body.Close()
	return nil, statusError(resp)
}

func (b *httpBackend) Has(ctx context.Context, key string) (bool, error) {
	resp, err := b.do(ctx, http.MethodHead, key, nil, 0, nil)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, statusError(resp)
}

func (b *httpBackend) Put(ctx context.Context, key string, r io.ReadSeeker, size int64, create bool) error {
	var hdr map[string]string
	if create {
		hdr = map[string]string{"If-None-Match": "*"}
	}
	resp, err := b.do(ctx, http.MethodPut, key, r, size, hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case create && resp.StatusCode == http.StatusPreconditionFailed:
		return nil // there already
	}
	return statusError(resp)
}

// List walks nginx's JSON autoindex below prefix.
func (b *httpBackend) List(ctx context.Context, prefix string) ([]string, error) {
	resp, err := b.do(ctx, http.MethodGet, prefix, nil, 0, map[string]string{"Accept": "application/json"})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp)
	}
	var entries []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		return nil, fmt.Errorf("list %s: want a JSON directory listing (nginx: autoindex on; autoindex_format json): %w", prefix, err)
	}
	var keys []string
	for _, e := range entries {
		switch e.Type {
		case "directory":
			sub, err := b.List(ctx, prefix+url.PathEscape(e.Name)+"/")
			if err != nil {
				return nil, err
			}
			keys = append(keys, sub...)
		case "file":
			keys = append(keys, prefix+e.Name)
		}
	}
	return keys, nil
}
