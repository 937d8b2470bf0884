"""Django's PostgreSQL backend with a health check that costs no round trip when idle.

With ``CONN_HEALTH_CHECKS`` Django checks a kept connection before each request uses it,
and again before the work after the answer (``monitor_project/asgi_http.py``): a
``SELECT 1`` each time: two round trips on every publish request.

A kept connection that sits idle between two uses receives nothing from the server,
unless something happened to it: a terminated backend (``pg_terminate_backend``, a fast
or immediate shutdown) sends its FATAL error and closes, a crashed server's socket
reports EOF or a reset. Either makes the socket readable. So the check asks the kernel
first: nothing to read means nothing happened since the last use, and the connection is
used as it is; anything to read (also the harmless: a parameter change the server
reports after a configuration reload) gets Django's own ``SELECT 1``, which reads it and
decides. What neither check sees at once is a peer that vanished without a word (a
network partition): ``SELECT 1`` would wait for TCP's timeout there, as the query does.
"""

import select

from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus


def socket_has_data(fileno: int) -> bool:
    """Whether the socket has something to read (data, EOF or an error), without waiting."""
    poller = select.poll()
    poller.register(fileno, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            return False
        try:
            idle_and_quiet = connection.pgconn.transaction_status == (
                TransactionStatus.IDLE
            ) and not socket_has_data(connection.pgconn.socket)
        except Exception:  # no socket any more (closed under us): Django's check decides
            idle_and_quiet = False
        return idle_and_quiet or super().is_usable()
