package stdlib

import "embed"

// FS holds the CUE packages of the stdlib, one directory each, importable as
// ModulePath + "/" + directory (e.g. "vmb.dev/vmb").
//
//go:embed vmb/*.cue
var FS embed.FS

// ModulePath is the import path prefix of the stdlib's packages.
const ModulePath = "vmb.dev"
