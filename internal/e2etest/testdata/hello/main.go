// Command hello prints hello; TestBuild builds it by package path.
package main

import "fmt"

func main() { fmt.Println("hello") }
