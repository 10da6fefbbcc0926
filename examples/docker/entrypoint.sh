#!/bin/sh
# Activate the environment the image was built with (PATH, CONDA_PREFIX, its activate.d scripts),
# then run the container's command in it: `docker run IMAGE demo-greet`, or any other program.
set -e
# shellcheck source=/dev/null # written when the image is built
. /opt/activate.sh
exec "$@"
