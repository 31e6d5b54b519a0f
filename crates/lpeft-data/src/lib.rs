//! Task readers (GLUE, SuperGLUE, SQuAD), task registry, tokenized dataset artifacts and batching.
