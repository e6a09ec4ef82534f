"""The `images` stage: the images a split's dialogues reference, fetched (img2dataset), checked and stored.

    schema.py   the image shard schema, image ids, the options and the per-image reasons
    safety.py   the URL policy: HTTP(S) only, no private / loopback / link-local / metadata address
                (after DNS and after every redirect), byte cap, decoded-pixel cap
    worker.py   one pool worker: img2dataset's Downloader (threads, retries, sha256 verification,
                resizing, Parquet writer) with the safe fetch in place of its urllib call
    stage.py    dialogue shard i -> image shard i, each image once, resumable; the `ssvd images` job
    store.py    reading the stored images by image id (trainer, preview)

See docs/images.md.
"""
