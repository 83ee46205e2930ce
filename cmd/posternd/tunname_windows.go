package main

// defaultTUNName on Windows is the name of the Wintun adapter posternd
// creates (shown in the network connections list).
const defaultTUNName = "Postern"
