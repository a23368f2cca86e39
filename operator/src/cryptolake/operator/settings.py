"""The operator's settings: ``CRYPTOLAKE_OPERATOR_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cryptolake.operator.builders import Images


class OperatorSettings(BaseSettings):
    """Env: CRYPTOLAKE_OPERATOR_METRICS_PORT, CRYPTOLAKE_OPERATOR_KAFKA_IMAGE…"""

    model_config = SettingsConfigDict(
        env_prefix="CRYPTOLAKE_OPERATOR_", extra="ignore", use_attribute_docstrings=True
    )

    metrics_port: int = Field(default=9402, ge=0, le=65535)
    """Prometheus metrics (0: off)."""
    kafka_image: str = Images.kafka
    """Default image of `engine: kafka` brokers."""
    redpanda_image: str = Images.redpanda
    """Default image of `engine: redpanda` brokers."""
    minio_image: str = Images.minio
    """Default MinIO image (`storage.engine: minio`)."""
    producer_image: str = Images.producer
    """Default producer image."""
    jobs_image: str = Images.jobs
    """Default Spark jobs image (`spec.processing.image` wins)."""
    api_image: str = Images.api
    """Default API image, also the alerts worker's (`spec.api.image` wins)."""

    def images(self) -> Images:
        return Images(
            kafka=self.kafka_image,
            redpanda=self.redpanda_image,
            minio=self.minio_image,
            producer=self.producer_image,
            jobs=self.jobs_image,
            api=self.api_image,
        )
