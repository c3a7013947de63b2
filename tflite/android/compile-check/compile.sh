#!/usr/bin/env bash
# Compiles the Android sample's Kotlin (Npz.kt, RepNetTrainer.kt) against the LiteRT Java API,
# with -Werror: a LiteRT call that does not exist, or has another signature, fails the build.
#
#   sh tflite/android/compile-check/compile.sh      # from the repository root; .ci/run runs it
#
# Needs no Android SDK, only Java 17 and the network on its first run:
# - ../shared/android/litert-java-api/ beside the repository (LITERT_JAVA_API overrides it): the
#   pure-Java org.tensorflow.lite API of LiteRT 2.3.0, as in the LiteRT repository.
# - the Kotlin compiler bundled in the PyPI wheel kotlin-jupyter-kernel (pip download, pinned by
#   version and SHA-256), unpacked once under .cache/android/ (git-ignored): reruns take seconds.
# - org.json (Android's own, Debian libandroid-json-java) and checker-qual (annotations the API
#   uses, Debian libchecker-framework-java), installed with apt-get when missing.
# What it does not check: Gradle files, android.* APIs beyond org.json, dexing, native behaviour.
# Any failure, including a compiler that cannot be installed, exits non-zero.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
sources="$root/tflite/android/app/src/main/java/com/example/repnet"
api="${LITERT_JAVA_API:-$root/../shared/android/litert-java-api}"
cache="$root/.cache/android"
kotlin_version="0.19.0.944"
kotlin_sha256="dc654a426a28e6621aeb0bd7772d268a9a877aabae4a17b73383752a416281a3"
kotlin="$cache/kotlin-jupyter-kernel-$kotlin_version"
checker_jar=/usr/share/java/checker-qual.jar
json_jar=/usr/share/java/com.android.json.jar

fail() {
    echo "compile-check: error: $*" >&2
    exit 1
}

# Java 17 (JAVA_HOME wins; the LiteRT API and the Kotlin compiler need 17 or newer).
java_home="${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"
[ -x "$java_home/bin/javac" ] || java_home="$(dirname "$(dirname "$(readlink -f "$(command -v javac || echo /none)")")")"
[ -x "$java_home/bin/javac" ] ||
    fail "no JDK found. Install Java 17 (apt-get install openjdk-17-jdk-headless) or set JAVA_HOME."
java_major="$("$java_home/bin/javac" -version 2>&1 | sed -E 's/^javac ([0-9]+).*/\1/')"
[ "$java_major" -ge 17 ] 2>/dev/null ||
    fail "$java_home/bin/javac is Java $java_major; Java 17 or newer is needed. Set JAVA_HOME."

# org.json and checker-qual.
if [ ! -f "$checker_jar" ] || [ ! -f "$json_jar" ]; then
    packages="libchecker-framework-java libandroid-json-java"
    command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] ||
        fail "$checker_jar or $json_jar is missing; install the Debian packages $packages."
    echo "compile-check: installing $packages"
    apt-get install -y -qq --no-install-recommends $packages >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends $packages >/dev/null; } ||
        fail "apt-get could not install $packages."
fi

# The Kotlin compiler.
if [ ! -f "$kotlin/.complete" ]; then
    echo "compile-check: downloading the Kotlin compiler (kotlin-jupyter-kernel==$kotlin_version, 80 MB)"
    python="$(command -v python3 || command -v python || true)"
    [ -n "$python" ] && "$python" -m pip --version >/dev/null 2>&1 ||
        fail "pip is needed to download the Kotlin compiler (python3 -m pip)."
    rm -rf "$kotlin" "$cache/download"
    "$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$cache/download" \
        "kotlin-jupyter-kernel==$kotlin_version" ||
        fail "pip could not download kotlin-jupyter-kernel==$kotlin_version."
    wheel="$(ls "$cache"/download/kotlin_jupyter_kernel-*.whl)"
    echo "$kotlin_sha256  $wheel" | sha256sum --check --quiet ||
        fail "$wheel does not have the pinned SHA-256 $kotlin_sha256."
    mkdir -p "$kotlin"
    "$python" - "$wheel" "$kotlin" <<'EOF'
import sys, zipfile, os
wheel, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith("run_kotlin_kernel/jars/") and name.endswith(".jar"):
            with open(os.path.join(target, os.path.basename(name)), "wb") as f:
                f.write(archive.read(name))
EOF
    rm -rf "$cache/download"
    touch "$kotlin/.complete"
fi
compiler_cp="$(ls "$kotlin"/kotlin-jupyter-kernel-*-all.jar "$kotlin"/kotlin-stdlib-*.jar \
    "$kotlin"/kotlin-reflect-*.jar "$kotlin"/kotlin-script-runtime-*.jar "$kotlin"/annotations-*.jar |
    paste -sd: -)"
stdlib="$(ls "$kotlin"/kotlin-stdlib-*.jar)"

# Compile: the API with javac, then the sample with kotlinc, warnings as errors.
build="$cache/build"
rm -rf "$build" && mkdir -p "$build/litert" "$build/kotlin"
[ -d "$api" ] || fail "no LiteRT Java API sources at $api: clone with ../shared beside the
repository, or set LITERT_JAVA_API to the folder (see ../shared/android/README.md)."
find "$api" -name '*.java' >"$build/api-sources"
"$java_home/bin/javac" --release 17 -nowarn -Xlint:none -encoding UTF-8 -cp "$checker_jar" \
    -d "$build/litert" @"$build/api-sources" ||
    fail "javac could not compile the LiteRT Java API in $api."
"$java_home/bin/java" -cp "$compiler_cp" org.jetbrains.kotlin.cli.jvm.K2JVMCompiler \
    -no-stdlib -no-reflect -jvm-target 17 -Werror \
    -cp "$build/litert:$checker_jar:$json_jar:$stdlib" -d "$build/kotlin" \
    "$sources/Npz.kt" "$sources/RepNetTrainer.kt" ||
    fail "the Android sample does not compile against the LiteRT 2.3.0 Java API (errors above)."
echo "compile-check: Npz.kt and RepNetTrainer.kt compile against the LiteRT Java API (-Werror)."
