// Command pause is the node's sandbox ("pause") container: it holds a pod's namespaces and does
// nothing else until it is told to stop. Built statically and put in an image from scratch by
// test-env/setup.sh, since no image can be pulled here.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// As PID 1 of the pod, reap the children that processes joining the pod leave behind.
	signal.Ignore(syscall.SIGCHLD)
	<-stop
}
