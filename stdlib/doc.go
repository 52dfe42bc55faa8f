// Package stdlib embeds the CUE packages every build repository can import:
// the job schemas (#Job kinds) and templates (#Image, disk layouts, recipes).
//
// It holds data only; lang decides how the files are presented to CUE.
package stdlib
