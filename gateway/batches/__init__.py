"""OpenAI's Batch API through the gateway (`/v1/files`, `/v1/batches`; docs/batches.md).

    lines.py      the input file: parsed and checked line by line (400s name the line)
    records.py    a batch and a file as the gateway keeps them, and their OpenAI objects
    store.py      where they are kept: Redis (`store_redis.py`), the SQLite file
                  (`store_sqlite.py`), or this process's memory
    multipart.py  the upload's multipart/form-data body
    upstream.py   an OpenAI-format upstream's own files and batches endpoints
    books.py      the results, priced line by line at batch rates and booked
    service.py    create (route, hold, submit), get, list, cancel; `progress.py`: each batch
                  followed to its end, settled exactly once (the poller, or a client's GET)
"""
