package main

// defaultTUNName on macOS: the kernel numbers utun devices itself, so plain
// "utun" asks for the next free one; posternd logs the one it got.
const defaultTUNName = "utun"
