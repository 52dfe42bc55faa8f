// Package lang loads a build repository (a directory holding a CUE package, plus
// the embedded stdlib), validates it, reports errors at the user's file:line:col,
// and compiles its images into a graph of keyed nodes (Compile).
//
// Compile checks every image's fields against the template it is made from (a
// field no template declares, a parameter left unset: template.go), then every
// step twice: against its job's schema in the stdlib, then
// against the image's state at that step (which disks, partitions and filesystems
// exist), and canonicalises what can be written several ways (sizes, partition
// types) so that one meaning is one key. Local inputs are hashed by content, with
// a stat cache in a file the caller names. The executor identity that enters every
// key is the caller's too (Options); lang reads no environment and no flag.
//
// Compile keeps the graph it made in a graph cache, a directory the caller names,
// keyed by everything the graph depends on: vmb's own executable (which embeds the
// stdlib and this compiler), the options, the CUE files and the local inputs, each
// by digest through the stat cache (graphcache.go). An unchanged repository then
// compiles without evaluating CUE; any change, or any doubt, compiles it afresh.
//
// lang also keeps the registry of imported repositories (vmb import), a small JSON
// file in the configuration directory the caller names.
//
// lang is the only package that imports CUE; it hands plain Go values to graph.
package lang
