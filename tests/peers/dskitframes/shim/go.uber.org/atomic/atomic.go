// Stand-in for the part of go.uber.org/atomic that dskit's tcp_transport_conn.go uses (Int64 Add and
// Swap), written for sidecrypt's vector generator over sync/atomic; Debian does not package it here.
package atomic

import "sync/atomic"

// Int64 is an int64 used atomically.
type Int64 struct{ v int64 }

// Add adds n and returns the new value.
func (i *Int64) Add(n int64) int64 { return atomic.AddInt64(&i.v, n) }

// Swap stores n and returns the old value.
func (i *Int64) Swap(n int64) int64 { return atomic.SwapInt64(&i.v, n) }

// Load returns the value.
func (i *Int64) Load() int64 { return atomic.LoadInt64(&i.v) }
