// Package lang loads a build repository (a directory holding a CUE package, plus
// the embedded stdlib), validates it, reports errors at the user's file:line:col,
// and compiles its images into a graph of keyed nodes.
//
// lang is the only package that imports CUE; it hands plain Go values to graph.
package lang
