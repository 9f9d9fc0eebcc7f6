"""Settings for a bench node that writes every SQL statement it runs to ``STATEMENT_LOG`` (one line each:
thread, whether inside an atomic block, the statement's first words). bench/db_per_answer.py --statements uses
it to say where an answer's transactions go; nothing else does."""

import os
import threading

from django.db.backends.signals import connection_created

from chatsite.settings import *  # noqa: F403

_LOG = open(os.environ["STATEMENT_LOG"], "a", buffering=1)  # noqa: SIM115 - the node's lifetime


def _log_statement(execute, sql, params, many, context):
    connection = context["connection"]
    words = " ".join(str(sql).split())[:110]
    _LOG.write(f"{threading.current_thread().name}\t{int(connection.in_atomic_block)}\t{words}\n")
    return execute(sql, params, many, context)


def _wrap(sender, connection, **kwargs):
    if _log_statement not in connection.execute_wrappers:
        connection.execute_wrappers.append(_log_statement)


connection_created.connect(_wrap)
