"""Research over the whole universe and months of history, apart from the live page.

Reads the research history (:mod:`storage.research`, filled from Binance's public archives by
:mod:`ingestion.archives`) and runs universe scans and walk-forward studies on Dask's distributed
scheduler. It sits above ``pairs`` (it reuses the scanner's statistics) and below the entry points.
"""
