"""Drives idbridge's embedded SFTP server with paramiko (a second, independent SFTP client).

Environment: SFTP_PORT, KEY_A, USER_A, KEY_B, USER_B. Uploads a delivery as A (to a temporary
name, then rename: the pattern many HR exporters use) and probes the isolation between A and B.
Exits non-zero with a message on the first failed expectation.
"""
import io
import os
import sys

import paramiko


def connect(key_path, user):
    key = paramiko.Ed25519Key.from_private_key_file(key_path)
    t = paramiko.Transport(("127.0.0.1", int(os.environ["SFTP_PORT"])))
    t.connect(username=user, pkey=key)
    return t, paramiko.SFTPClient.from_transport(t)


def must_fail(what, fn):
    try:
        fn()
    except (IOError, OSError) as e:
        return e
    sys.exit(f"expected failure: {what}")


def main():
    ta, a = connect(os.environ["KEY_A"], os.environ["USER_A"])
    tb, b = connect(os.environ["KEY_B"], os.environ["USER_B"])

    b.putfo(io.BytesIO(b"B private\n"), "private.txt")

    # A delivers: upload under a temporary name, then rename into place.
    users = b"user_id,first_name,last_name,email\np1,Pia,P,pia@foo-corp.com\np2,Per,Q,per@foo-corp.com\n"
    a.putfo(io.BytesIO(users), "users.csv.part")
    a.rename("users.csv.part", "users.csv")

    # Overwrite own file, list own inbox.
    a.putfo(io.BytesIO(b"one\n"), "note.txt")
    a.putfo(io.BytesIO(b"two\n"), "note.txt")
    with a.open("note.txt") as f:
        assert f.read() == b"two\n", "overwrite"
    names = a.listdir("/")
    assert "note.txt" in names and "private.txt" not in names, names

    user_b = os.environ["USER_B"]
    must_fail("open ../B", lambda: a.open(f"../{user_b}/private.txt").read())
    must_fail("open /../B", lambda: a.open(f"/../{user_b}/private.txt").read())
    must_fail("listdir ..", lambda: a.listdir(".."))
    must_fail("listdir ../B", lambda: a.listdir(f"../{user_b}"))
    must_fail("stat ../B", lambda: a.stat(f"../{user_b}/private.txt"))
    must_fail("write ../B", lambda: a.putfo(io.BytesIO(b"x"), f"../{user_b}/users.csv"))
    must_fail("absolute /etc/passwd", lambda: a.open("/etc/passwd").read())
    must_fail("symlink", lambda: a.symlink(f"../{user_b}/private.txt", "link"))
    must_fail("symlink abs", lambda: a.symlink("/etc/passwd", "link2"))
    must_fail("readlink", lambda: a.readlink("note.txt"))
    must_fail("mkdir", lambda: a.mkdir("sub"))
    must_fail("rename out", lambda: a.rename("note.txt", f"../{user_b}/note.txt"))
    must_fail("chdir ..", lambda: a.chdir(".."))
    must_fail("password login", lambda: paramiko_password())
    with b.open("private.txt") as f:
        assert f.read() == b"B private\n"
    a.remove("note.txt")
    a.close(); ta.close(); b.close(); tb.close()
    print("paramiko: ok")


def paramiko_password():
    t = paramiko.Transport(("127.0.0.1", int(os.environ["SFTP_PORT"])))
    try:
        t.connect(username=os.environ["USER_A"], password="hunter2")
    except paramiko.SSHException as e:
        raise OSError(str(e))
    finally:
        t.close()


if __name__ == "__main__":
    main()
