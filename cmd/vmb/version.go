package main

import (
	"encoding/json"
	"fmt"
	"runtime/debug"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/vmexec/proto"
)

// runVersion prints what decides vmb's keys besides the definitions: vmb's own
// version, the agent protocol, and the appliance of the cache.
func runVersion(e *env, args []string) int {
	fs := newFlags(e, "version", "[--cache DIR] [--json]")
	cacheDir := cacheFlag(fs)
	asJSON := fs.Bool("json", false, "print a JSON object instead of text")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return exitInvalid
	}
	dir := *cacheDir
	if dir == "" {
		var err error
		if dir, err = cas.DefaultDir(e.getenv); err != nil {
			fmt.Fprintln(e.stderr, "vmb:", err)
			return exitFailed
		}
	}
	app, appErr := cacheAppliance(dir)
	if *asJSON {
		type appliance struct {
			Digest        string `json:"digest"`
			KernelVersion string `json:"kernel_version"`
			Identity      string `json:"identity"`
		}
		v := struct {
			Version   string     `json:"version"`
			Protocol  int        `json:"protocol"`
			Cache     string     `json:"cache"`
			Appliance *appliance `json:"appliance"` // null: none in the cache
			Error     string     `json:"error,omitempty"`
		}{Version: vmbVersion(), Protocol: proto.Version, Cache: dir, Error: errString(appErr)}
		if app != nil {
			v.Appliance = &appliance{app.Digest.String(), app.KernelVersion, app.Identity()}
		}
		b, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintf(e.stdout, "%s\n", b)
	} else {
		fmt.Fprintf(e.stdout, "vmb        %s\n", vmbVersion())
		fmt.Fprintf(e.stdout, "protocol   %d\n", proto.Version)
		switch {
		case appErr != nil:
			fmt.Fprintf(e.stdout, "appliance  unreadable in %s: %v\n", dir, appErr)
		case app == nil:
			fmt.Fprintf(e.stdout, "appliance  none in %s\n", dir)
		default:
			fmt.Fprintf(e.stdout, "appliance  %s (kernel %s)\n", app.Digest, app.KernelVersion)
		}
	}
	if appErr != nil {
		return exitFailed
	}
	return exitOK
}

// vmbVersion is the version of this binary (see buildVersion).
func vmbVersion() string {
	bi, _ := debug.ReadBuildInfo()
	return buildVersion(bi)
}

// buildVersion is the version bi names: the main module's version, else the VCS
// revision it was built from ("+dirty" if the tree had changes), else "(devel)".
func buildVersion(bi *debug.BuildInfo) string {
	if bi == nil {
		return "(devel)"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "+dirty"
		}
	}
	if rev == "" {
		return "(devel)"
	}
	return rev + dirty
}
