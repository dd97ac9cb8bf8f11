"""Training the U-net (:mod:`.loop`), on one device or with torch DDP (:mod:`.distributed`)."""
