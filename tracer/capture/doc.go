// Package capture writes and reads tcptrail's capture files: JSON Lines of
// the records in tracer/record, a header first and a summary last. Its
// Writer is a sink of the live pipeline (`tcptrail trace -o` and --json);
// its Reader streams a capture back for `tcptrail report`.
package capture
