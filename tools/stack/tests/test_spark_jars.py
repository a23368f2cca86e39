import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cryptolake.stack.jars import pom_path, resolved_jars_dir

POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def artifact_name(jar: Path) -> str:
    """``kafka-clients-3.9.1.jar`` → ``kafka-clients`` (the name without its version)."""
    return re.sub(r"-\d[\w.\-]*\.jar$", "", jar.name)


def pom_property(name: str) -> str:
    value = ET.parse(pom_path("spark-jars")).find(f"m:properties/m:{name}", POM_NS)
    assert value is not None and value.text
    return value.text


def test_artifact_name_strips_the_version():
    assert artifact_name(Path("delta-spark_4.1_2.13-4.3.1.jar")) == "delta-spark_4.1_2.13"
    assert artifact_name(Path("wildfly-openssl-2.1.4.Final.jar")) == "wildfly-openssl"


def test_spark_jars_add_only_what_the_pyspark_wheel_lacks():
    pyspark = pytest.importorskip("pyspark")
    assert pyspark.__version__ == pom_property("spark.version")
    shipped = {artifact_name(jar) for jar in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    extras = {artifact_name(jar) for jar in resolved_jars_dir("spark-jars").glob("*.jar")}
    assert extras & shipped == set()
    hadoop = {jar.name for jar in (Path(pyspark.__file__).parent / "jars").glob("hadoop-client-*")}
    assert f"hadoop-client-api-{pom_property('hadoop.version')}.jar" in hadoop
