"""An open paramiko session whose key an administrator removes (idbridge's embedded SFTP server).

Environment: SFTP_PORT, KEY, USER. Protocol on stdin/stdout, one line each:
  prints "open" once logged in with an upload half written (users.csv, not closed),
  waits for "revoked" on stdin (the test removed the key meanwhile),
  then expects the next write, a listing and a new upload to be refused, and prints "refused".
Exits non-zero with a message on the first failed expectation.
"""
import io
import os
import sys

import paramiko


def must_fail(what, fn):
    try:
        fn()
    except (IOError, OSError) as e:
        return e
    sys.exit(f"expected failure: {what}")


def main():
    key = paramiko.Ed25519Key.from_private_key_file(os.environ["KEY"])
    t = paramiko.Transport(("127.0.0.1", int(os.environ["SFTP_PORT"])))
    t.connect(username=os.environ["USER"], pkey=key)
    sftp = paramiko.SFTPClient.from_transport(t)
    sftp.listdir(".")
    f = sftp.open("users.csv", "w")
    f.write(b"user_id,first_name,last_name,email\n")
    f.flush()
    print("open", flush=True)
    if sys.stdin.readline().strip() != "revoked":
        sys.exit("the test did not say revoked")
    e = must_fail("a write after the key was removed", lambda: (f.write(b"p1,Pia,P,pia@foo-corp.com\n"), f.flush()))
    if "revoked" not in str(e):
        sys.exit(f"the refusal does not say why: {e!r}")
    must_fail("a listing after the key was removed", lambda: sftp.listdir("."))
    must_fail("a new upload after the key was removed", lambda: sftp.putfo(io.BytesIO(b"x\n"), "other.csv"))
    try:
        f.close()
    except (IOError, OSError):
        pass
    t.close()
    print("refused", flush=True)


if __name__ == "__main__":
    main()
