//! idbridge-sftp
