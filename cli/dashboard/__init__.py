"""``herd dashboard``: a live web page of the cluster, served by the CLI process.

* :mod:`.census` (pure): the children, nodes and their history; summaries per supervisor and
  node, searchable pages of children, coalesced timeline events.
* :mod:`.feed`: what feeds the census from the cluster (the registry's watch of child records,
  the membership's node events, static trees and panels polled every few seconds) and keeps
  trying through a head restart.
* :mod:`.panels`: the panel interface later layers add their section through.
* :mod:`.server`: the aiohttp app: the page, JSON endpoints, the server-sent event stream and
  the token-protected actions.
"""
