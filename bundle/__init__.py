"""The bundle, the ground floor both sides stand on: its file names and manifest (bundle.files),
picture preprocessing (bundle.images), the exported CNN's runtime (bundle.litert, bundle.embedding)
and atomic writes (bundle.atomic). It imports neither the build side (classifier, pipeline) nor the
server's packages, and no TensorFlow; importing it loads nothing.
"""
