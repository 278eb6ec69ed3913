# SFTP directories (crates/sftp): OpenSSH's real `sftp` client and `ssh-keygen` for the push
# tests, a private `sshd` (openssh-server) as the customer's server for the pull tests, and
# paramiko (into the repo venv) as a second scripted SFTP client. Sourced by scripts/test-deps.sh.
apt_ensure openssh-client openssh-server openssh-sftp-server
venv_pip_ensure "$REPO/crates/sftp/tests/py/requirements.txt"
