plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "com.example.repnet"
    compileSdk = 35

    defaultConfig {
        applicationId = "com.example.repnet"
        // 26: java.nio.file.Files.move(ATOMIC_MOVE) for the atomic checkpoint.
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1"
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    // A model shipped in assets/ must stay uncompressed to be memory-mapped.
    androidResources {
        noCompress += "tflite"
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    // The LiteRT runtime (formerly TensorFlow Lite), with the
    // org.tensorflow.lite.Interpreter API and its runSignature(). The exported
    // model uses builtin ops only: no select-TF-ops (Flex) library is needed.
    implementation("com.google.ai.edge.litert:litert:2.3.0")
}
