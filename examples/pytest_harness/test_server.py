import pytest


def ask(sock, request: str) -> str:
    sock.sendall(request.encode() + b"\n")
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection"
        answer += chunk
    return answer.decode().strip()


@pytest.mark.parametrize("n", range(20))
def test_starts_pristine(server, n):
    with server.connect(31301) as s:
        assert ask(s, "GET").startswith("counter 0 entries 200000 ")
        for i in range(1, n + 2):  # each test changes the state its own way
            assert ask(s, "INCR") == str(i)
    assert "request INCR" in server.log
