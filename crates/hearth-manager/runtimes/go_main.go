// Hearth's Go runtime: this file is built together with a function's code (package main, in
// the same directory) into one static binary, which speaks the runtime protocol in both
// modes. The function defines
//
//	func Handler(event json.RawMessage, ctx Context) (any, error)
//
// and what it prints on stdout goes to the logs.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"
)

// Context is what the handler knows about its invocation.
type Context struct {
	InvocationID    string `json:"invocation_id"`
	FunctionName    string `json:"function_name"`
	FunctionVersion *int   `json:"function_version"`
	DeadlineMs      int64  `json:"deadline_ms"`
	MemoryLimitMib  int    `json:"memory_limit_mib"`
}

// RemainingMs is how long the invocation has left.
func (c Context) RemainingMs() int64 {
	left := c.DeadlineMs - time.Now().UnixMilli()
	if left < 0 {
		return 0
	}
	return left
}

type hearthError struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Stack   string `json:"stack,omitempty"`
}

func hearthCall(event json.RawMessage, ctx Context) (reply []byte) {
	defer func() {
		if p := recover(); p != nil {
			reply, _ = json.Marshal(map[string]any{"error": hearthError{Message: fmt.Sprintf("panic: %v", p), Type: "Panic"}})
		}
	}()
	out, err := Handler(event, ctx)
	if err != nil {
		reply, _ = json.Marshal(map[string]any{"error": hearthError{Message: err.Error(), Type: "Error"}})
		return reply
	}
	reply, err = json.Marshal(map[string]any{"ok": out})
	if err != nil {
		reply, _ = json.Marshal(map[string]any{"error": hearthError{Message: "the handler's result is not JSON: " + err.Error(), Type: "TypeError"}})
	}
	return reply
}

func main() {
	mode := "process"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	// Replies go to the real stdout; stdout itself is pointed at stderr, the logs.
	fd, err := syscall.Dup(1)
	if err != nil {
		panic(err)
	}
	replies := os.NewFile(uintptr(fd), "replies")
	if err := syscall.Dup2(2, 1); err != nil {
		panic(err)
	}
	if mode == "persistent" {
		in := bufio.NewReaderSize(os.Stdin, 1<<20)
		for {
			line, err := in.ReadBytes('\n')
			if len(line) > 1 {
				var req struct {
					Event   json.RawMessage `json:"event"`
					Context Context         `json:"context"`
				}
				var reply []byte
				if jerr := json.Unmarshal(line, &req); jerr != nil {
					reply, _ = json.Marshal(map[string]any{"error": hearthError{Message: jerr.Error(), Type: "ParseError"}})
				} else {
					reply = hearthCall(req.Event, req.Context)
				}
				os.Stderr.WriteString("\x1ehearth-call-end\n")
				replies.Write(append(reply, '\n'))
			}
			if err != nil {
				return
			}
		}
	}
	event, _ := io.ReadAll(os.Stdin)
	if len(event) == 0 {
		event = []byte("null")
	}
	if !json.Valid(event) {
		reply, _ := json.Marshal(map[string]any{"error": hearthError{Message: "the event is not JSON", Type: "ParseError"}})
		replies.Write(append(reply, '\n'))
		return
	}
	ctx := Context{
		InvocationID: os.Getenv("HEARTH_INVOCATION_ID"),
		FunctionName: os.Getenv("HEARTH_FUNCTION"),
	}
	if v, err := strconv.Atoi(os.Getenv("HEARTH_VERSION")); err == nil {
		ctx.FunctionVersion = &v
	}
	ctx.DeadlineMs, _ = strconv.ParseInt(os.Getenv("HEARTH_DEADLINE_MS"), 10, 64)
	ctx.MemoryLimitMib, _ = strconv.Atoi(os.Getenv("HEARTH_MEMORY_MIB"))
	replies.Write(append(hearthCall(json.RawMessage(event), ctx), '\n'))
}
