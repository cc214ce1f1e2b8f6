"""Upstream side: node choice (`balancer`), one connection (`connection`), pools (`pool`)."""
