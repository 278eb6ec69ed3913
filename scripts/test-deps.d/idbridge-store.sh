# idbridge-store: tests/crash.rs counts and orders fdatasync calls of the crash writer under strace.
apt_ensure strace
