//! Content-addressed artifact store: keys, manifests, atomic publish, verification, locking.
