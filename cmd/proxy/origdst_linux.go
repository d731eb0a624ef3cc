package main

import "github.com/meshtls/meshtls-operator/internal/capture"

// originalDst recovers a captured connection's destination (SO_ORIGINAL_DST).
var originalDst = capture.OriginalDst
