"""`make bench`: runs every benchmark module and writes bench/results.json."""
