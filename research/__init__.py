"""Research on the build side: the model ladder (research.ladder) and the airbench ablation
(research.ablation). They train and measure; their reports land in the bundle's reports/, which
the model card shows. Nothing here is imported by the build command or the server.
"""
