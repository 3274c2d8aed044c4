"""`radbridge demo`: the whole imaging-AI flow on one machine, against a real engine.

The demo is a client of a `radbridge run` child process, not a shortcut through it: the
ADT and the order go over real MLLP, the study over real C-STORE, and what it reports is
read back from the engine's API and from the files (or deliveries) the engine produced.

- `channels`: the channel set (the shipped defaults on free local ports, or real peers);
- `messages`: the HL7 v2.5.1 ADT^A04 and ORM^O01 of one demonstration case;
- `study`: the synthetic head CT of that case, at the slice count asked for;
- `engine`: the child process and its API;
- `runner`: one case from the first message to the last output, with its timings;
- `report`: the summary as text (rich) or JSON.
"""
