"""Serve the application with waitress in a thread, for the docs and the
tests: ``url, stop = serve(app)``, the shape of ``ZEO.server``'s answer.
"""
import threading

import waitress
from waitress import wasyncore


def serve(app, threads=4):
    """Serve app on a free loopback port, in a thread; (url, stop):
    ``stop()`` ends the server and its threads (open connections too)."""
    server = waitress.create_server(app, host='127.0.0.1', port=0,
                                    threads=threads)
    done = threading.Event()

    def loop():
        # waitress's own loop, in short turns, so that the server is
        # closed here, in its loop thread, once asked: closing its
        # sockets from another thread races with its select().
        while not done.is_set():
            wasyncore.loop(timeout=0.05, map=server._map, count=1)
        wasyncore.close_all(server._map)

    thread = threading.Thread(target=loop, name='notes server', daemon=True)
    thread.start()

    def stop():
        server.task_dispatcher.shutdown()
        done.set()
        thread.join(10)
        if thread.is_alive():
            raise RuntimeError("the server did not stop within 10 s")

    return f'http://127.0.0.1:{server.effective_port}', stop
