"""The pipeline stages, one module each: embed -> candidates -> filter -> train -> cluster
-> evaluate/export, and info. Each is a plain function over a store."""
