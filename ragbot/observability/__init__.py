"""Operations: Prometheus metrics, structured logs with a request id, and what ties them to a request.

Nothing here is imported by the pipeline itself; the API app and ``ragbot serve`` wire it in.
"""
