"""The file contract: the schema and its vocabulary, the writer, the reader, atomic files and
the shard index. It imports no physics and no producer."""
