"""RVC (Retrieval-based Voice Conversion): community ``.pth`` voices over HuBERT/ContentVec content.

* :mod:`engines.rvc.hubert`: the content encoder (HuBERT-Base in the fairseq
  checkpoint layout RVC's ``hubert_base.pt``, ContentVec, uses);
* :mod:`engines.rvc.synthesizer` (and its building blocks): the v1/v2
  synthesizers with and without F0, loaded from an RVC ``.pth``;
* :mod:`engines.rvc.pipeline`: the conversion of a whole utterance: high-pass,
  F0, pitch shift and coarse pitch, content features, optional retrieval,
  protect, the synthesizer, RMS mix, segmentation of long audio.
"""
