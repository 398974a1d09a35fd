"""Port checks against the OS: a port in use is taken, one a stopped backend left in TIME_WAIT is free."""

import socket

from llamactl.instance.ports import port_is_free


def test_a_listening_port_is_taken_and_a_closed_one_is_free() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)


def test_a_port_whose_connections_linger_in_time_wait_is_free() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as backends bind
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port)) as client:
        served, _ = listener.accept()
        served.close()  # the server side closes first: its end of the connection is in TIME_WAIT
        client.recv(1)
    listener.close()
    assert port_is_free(port)
